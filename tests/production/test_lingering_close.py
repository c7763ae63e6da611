"""A request answered with its body unread ends in a lingering close.

The application refuses an upload before reading its body and the answer
leaves while the client is still sending.  Closing the connection then, with
the body unread, makes Linux reset it, and nginx, still forwarding the body,
could lose the answer and report 502 for a 403.  The server instead
half-closes, reads what the peer still sends until it closes (bounded), and
only then closes (``pyramid_sessup.serving.post_request``).  Each refusal runs
:data:`ROUNDS` times and every answer is counted: never a 5xx.  A connection
that drips its body is let go after the bound, and keep-alive is untouched
when nothing (or little) is left unread.
"""
from __future__ import annotations

import collections
import errno
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from gunicorn.config import Config
from gunicorn.http.parser import RequestParser

from pyramid_sessup.serving import (
    GUNICORN_DRAINS,
    LINGER_SECONDS,
    application,
    body_left_unread,
    lingering_close,
    post_request,
)

from .conftest import Browser, Stack
from .test_streaming import (
    CONTENT_TYPE,
    FRONTS,
    GiB,
    MiB,
    base_of,
    connect,
    file_part_head,
    origin_headers,
    send_until_answered,
    tail,
)

#: Refusals sent in a row per case: before the lingering close, a third to a
#: half of the "session without token" ones through nginx came back as 502
#: (measured: 9 to 16 of 30).
ROUNDS = 30


def status_of(answer: bytes) -> str:
    """The status code of an answer's head, or what came instead."""
    if not answer:
        return "nothing (connection reset or closed)"
    return answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/1.1 ") else repr(answer[:40])


@pytest.mark.server
@pytest.mark.slow
@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("case", ["no session", "session without token", "not multipart"])
def test_refused_upload_answer_always_arrives(stack: Stack, front: str, case: str) -> None:
    base = base_of(stack, front)
    expected = "415" if case == "not multipart" else "403"
    statuses: collections.Counter[str] = collections.Counter()
    for _ in range(ROUNDS):
        headers = {"Content-Type": CONTENT_TYPE, "Accept": "application/json", **origin_headers(base)}
        if case == "not multipart":
            headers["Content-Type"] = "application/octet-stream"
        if case == "session without token":  # refused at the first file part, its first MiB read
            headers["Cookie"] = Browser(base).login().cookie
        answer, _ = send_until_answered(base, headers, GiB)
        statuses[status_of(answer)] += 1
    server_errors = sum(n for status, n in statuses.items() if status.startswith("5"))
    assert server_errors == 0, f"{server_errors} of {ROUNDS} answers were 5xx: {dict(statuses)}"
    assert statuses == {expected: ROUNDS}, dict(statuses)


@pytest.mark.server
@pytest.mark.slow
def test_unread_body_of_any_route_gets_its_answer(stack: Stack) -> None:
    """nginx buffers ordinary bodies (1 MiB at most) and sends them whole; a
    route that answers without reading one (405 here) lingers all the same."""
    body = os.urandom(MiB - 4096)
    statuses: collections.Counter[str] = collections.Counter()
    for _ in range(ROUNDS):
        answer = exchange(stack.front.url, f"POST /session HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}"
                          "\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n".encode() + body)
        statuses[status_of(answer)] += 1
    assert statuses == {"405": ROUNDS}, dict(statuses)


def exchange(base: str, request: bytes) -> bytes:
    """Send ``request`` whole, then read the answer until the server closes."""
    sock = connect(base)
    answer = b""
    try:
        sock.sendall(request)
        while chunk := sock.recv(65536):
            answer += chunk
    except OSError:
        pass
    finally:
        sock.close()
    return answer


def read_answer(sock: socket.socket) -> bytes:
    """One answer with a ``Content-Length`` body, read off a connection that stays open."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, data
        body += chunk
    assert len(body) == length  # nothing pipelined follows
    return head


@pytest.mark.server
@pytest.mark.slow
def test_dripping_client_is_let_go_after_the_bound(stack: Stack) -> None:
    """Straight to gunicorn: the refusal comes at once (the client has sent no
    body byte), then a client dripping a byte every 50 ms holds its thread no
    longer than the lingering bound: the server closes and the next drop is
    refused.  Without the lingering close gunicorn's own drain, whose deadline
    is checked between 1 KiB reads only, held it 54 s."""
    sock = socket.create_connection(("127.0.0.1", stack.server.port), timeout=10)
    with sock:
        sock.sendall(f"POST /upFile HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {CONTENT_TYPE}\r\n"
                     f"Content-Length: {GiB}\r\nAccept: application/json\r\n\r\n".encode())
        head = read_answer(sock)
        assert head.startswith(b"HTTP/1.1 403 "), head
        answered = time.monotonic()
        closed_after = None
        while time.monotonic() - answered < LINGER_SECONDS + 10:
            try:
                sock.send(b"x")
            except OSError as exc:
                assert exc.errno in (errno.EPIPE, errno.ECONNRESET), exc
                closed_after = time.monotonic() - answered
                break
            time.sleep(0.05)
    assert closed_after is not None, "the server never let the dripping client go"
    # A bound, not a speed: the thread is free again after LINGER_SECONDS.
    assert closed_after < LINGER_SECONDS + 2, f"held {closed_after:.1f} s"


@pytest.mark.server
def test_keep_alive_is_kept_when_little_or_nothing_is_left_unread(stack: Stack) -> None:
    """Straight to gunicorn, one connection: an upload, a refusal whose small
    body (under gunicorn's own drain) is left unread, and a page."""
    browser = Browser(stack.server.url).login()
    file_body = file_part_head("small.txt") + os.urandom(8192) + tail()
    assert len(file_body) < GUNICORN_DRAINS

    def upload(cookie: str) -> bytes:
        return (f"POST /upFile HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {CONTENT_TYPE}\r\n"
                f"Content-Length: {len(file_body)}\r\nAccept: application/json\r\n{cookie}\r\n").encode() + file_body

    with socket.create_connection(("127.0.0.1", stack.server.port), timeout=10) as sock:
        sock.sendall(upload(f"Cookie: {browser.cookie}\r\nX-CSRF-Token: {browser.token}\r\n"))
        head = read_answer(sock)
        assert head.startswith(b"HTTP/1.1 200 ") and b"Connection: keep-alive" in head, head
        sock.sendall(upload(""))  # no session: refused with its body unread
        head = read_answer(sock)
        assert head.startswith(b"HTTP/1.1 403 ") and b"Connection: keep-alive" in head, head
        sock.sendall(b"GET /session HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n\r\n")
        head = read_answer(sock)
        assert head.startswith(b"HTTP/1.1 200 "), head


# -- the pieces, without a server -------------------------------------------------------------


def gunicorn_request(raw: bytes) -> Any:
    """A request as gunicorn's own parser makes it, from ``raw``."""
    return next(RequestParser(Config(), iter([raw]), ("127.0.0.1", 1)))


def test_unread_body_is_told_by_the_installed_gunicorn() -> None:
    """:func:`body_left_unread` reads gunicorn's request object: this fails if
    gunicorn ever changes what it looks at."""
    big = GUNICORN_DRAINS + 1
    head = f"POST /upFile HTTP/1.1\r\nHost: x\r\nContent-Length: {big}\r\n\r\n".encode()
    assert body_left_unread(gunicorn_request(head + b"x" * 10))
    req = gunicorn_request(head + b"x" * big)
    req.body.read(big)
    assert not body_left_unread(req)
    small = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789"
    assert not body_left_unread(gunicorn_request(small))
    assert not body_left_unread(gunicorn_request(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
    chunked = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    assert body_left_unread(gunicorn_request(chunked))
    req = gunicorn_request(chunked)
    assert req.body.read() == b"hello"
    assert not body_left_unread(req)


def connected_pair() -> tuple[socket.socket, socket.socket]:
    """Both ends of a TCP connection on loopback (server side first)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    return server, client


def test_lingering_close_reads_to_the_peers_end_and_the_answer_arrives() -> None:
    server, client = connected_pair()
    with server, client:
        sent = 3 * MiB
        sender = threading.Thread(target=lambda: (client.sendall(os.urandom(sent)), client.shutdown(socket.SHUT_WR)))
        sender.start()
        server.sendall(b"the answer")
        assert lingering_close(server, seconds=30) == sent  # everything, up to the end of stream
        sender.join()
        assert client.recv(100) == b"the answer" and client.recv(100) == b""  # then a clean end, no reset


def test_lingering_close_stops_at_its_bounds() -> None:
    server, client = connected_pair()
    stop = threading.Event()

    def flood() -> None:
        block = os.urandom(MiB)
        try:
            while not stop.is_set():
                client.sendall(block)
        except OSError:
            pass

    sender = threading.Thread(target=flood)
    sender.start()
    try:
        assert lingering_close(server, seconds=30, limit=4 * MiB, pause=0.01) == 4 * MiB
    finally:
        stop.set()
        server.close()
        sender.join()
        client.close()
    server, client = connected_pair()
    with server, client:  # a peer that sends nothing and keeps the connection open
        assert lingering_close(server, seconds=0.3) == 0


def test_runner_adds_the_lingering_close_after_the_configurations_hook(tmp_path: Path) -> None:
    ini = tmp_path / "server.ini"
    ini.write_text("[server:main]\nuse = egg:pyramid_sessup#gunicorn\n")
    assert application(object(), {"__file__": str(ini)}).cfg.post_request is post_request
    seen = tmp_path / "seen"
    config = tmp_path / "gunicorn.conf.py"
    config.write_text(f"import pathlib\n\ndef post_request(worker, req, environ, resp):\n"
                      f"    pathlib.Path({str(seen)!r}).write_text(req)\n")
    hook = application(object(), {"__file__": str(ini)}, config=str(config)).cfg.post_request
    hook(None, "their hook ran", {}, None)  # no body left unread: ours does nothing
    assert seen.read_text() == "their hook ran"
